"""The training data: the record format, the tf.data input pipeline, the ImageNet converter's library, the demo data set."""
