"""A convolutional variational autoencoder whose own `train_step` computes
the loss (reconstruction + KL) and tracks its parts with Mean metrics.

Modelled on keras-io `examples/generative/vae.py` (Keras 3 version): an
encoder (Conv2D(32, 3, s2) - Conv2D(64, 3, s2) - Flatten - Dense(16) -
`z_mean`, `z_log_var`, a `Sampling` layer drawing with its own
`keras.random.SeedGenerator`) and a decoder (Dense(7*7*64) - Reshape -
Conv2DTranspose(64) - Conv2DTranspose(32) - Conv2DTranspose(1, sigmoid)),
a `keras.Model` subclass with no `call` whose `train_step` runs a
`tf.GradientTape` over the summed binary cross-entropy plus the KL term,
applies the gradients with `self.optimizer`, and returns its three
trackers (`loss`, `reconstruction_loss`, `kl_loss`); compiled with only an
optimizer (Adam), trained by `fit(digits, batch_size=128)`: no targets,
no compiled loss. The digits are generated (`_data.digit_images`):
5,000 images (70,000), 12 epochs (30).

The total loss falls from ~540 (a sigmoid decoder's first guesses summed
over 784 pixels) to ~370 per image; the KL term first collapses to ~0.01,
then grows as the 2-d code starts to carry the digit (as in the example).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from keras import ops

from real_runs import _data
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "VAE: custom train_step (recon+KL), loss trackers, no call(), no compiled loss, Adam"
MODELLED_ON = "keras-io examples/generative/vae.py"
TRUTH = Truth("healthy", measured="or-declared",
              note="loss only inside train_step: measured on it, or declared unmeasurable")

LATENT_DIM = 2


class Sampling(layers.Layer):
    """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        batch = ops.shape(z_mean)[0]
        dim = ops.shape(z_mean)[1]
        epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def build_encoder():
    encoder_inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(LATENT_DIM, name="z_mean")(x)
    z_log_var = layers.Dense(LATENT_DIM, name="z_log_var")(x)
    z = Sampling()([z_mean, z_log_var])
    return keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder():
    latent_inputs = keras.Input(shape=(LATENT_DIM,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(latent_inputs, decoder_outputs, name="decoder")


class VAE(keras.Model):
    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker,
                self.kl_loss_tracker]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction = self.decoder(z)
            reconstruction_loss = ops.mean(ops.sum(
                keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {
            "loss": self.total_loss_tracker.result(),
            "reconstruction_loss": self.reconstruction_loss_tracker.result(),
            "kl_loss": self.kl_loss_tracker.result(),
        }


def run(callbacks, seed, quick=False):
    images, _ = _data.digit_images(600 if quick else 5000, seed)
    digits = np.expand_dims(images, -1).astype("float32") / 255
    vae = VAE(build_encoder(), build_decoder(), name="vae")
    vae.compile(optimizer=keras.optimizers.Adam())
    history = vae.fit(digits, epochs=2 if quick else 12, batch_size=128, verbose=0,
                      callbacks=callbacks())
    return Outcome([vae], [history])
