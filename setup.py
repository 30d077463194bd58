"""sagan_tf: a faithful TensorFlow 2 port of the 2018 Self-Attention GAN release."""
from setuptools import find_packages, setup

setup(
    name="sagan_tf",
    version="0.1.0",
    description="Self-Attention GAN (Zhang et al. 2018) ported faithfully to TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sagan_tf", "sagan_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-gan==2.1.0",
        "tensorflow-hub==0.16.1",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",
        "tensorflow-datasets==4.9.10",
        "numpy",
        "absl-py",
        "pillow",
        "scipy",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3"],
        # Linux with NVIDIA GPUs: TensorFlow with its CUDA and cuDNN libraries
        # (plain "tensorflow" on Linux brings none and sees no GPU).
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
)
