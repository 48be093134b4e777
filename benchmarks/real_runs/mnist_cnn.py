"""A small convnet on MNIST-like digits.

Modelled on keras-io `examples/vision/mnist_convnet.py`: images scaled to
[0, 1] with a channel axis, one-hot labels (`to_categorical`), Conv2D(32) -
MaxPool - Conv2D(64) - MaxPool - Flatten - Dropout(0.5) - Dense(10,
softmax), Adam, `categorical_crossentropy`, batch 128,
`validation_split=0.1`. The digits are generated (`_data.digit_images`):
6,000 images (60,000).
"""

import keras
import numpy as np

from real_runs import _data
from real_runs._common import HEALTHY
from real_runs._common import Outcome

TITLE = "CNN: keras-io MNIST convnet, Dropout, Adam, validation_split"
MODELLED_ON = "keras-io examples/vision/mnist_convnet.py"
TRUTH = HEALTHY


def build(num_classes=10):
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="mnist_cnn",
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def run(callbacks, seed, quick=False):
    images, labels = _data.digit_images(384 if quick else 6000, seed)
    x = np.expand_dims(images.astype("float32") / 255, -1)
    y = keras.utils.to_categorical(labels, 10)
    model = build()
    history = model.fit(x, y, batch_size=128, epochs=1 if quick else 6, validation_split=0.1,
                        verbose=0, callbacks=callbacks())
    return Outcome([model], [history])
