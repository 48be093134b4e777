"""A DCGAN trained by `fit`: a `train_step` with two tapes and two
optimizers, logging `d_loss` and `g_loss` (no `loss`).

Modelled on keras-io `examples/generative/dcgan_overriding_train_step.py`
(Keras 3 version): a discriminator (Conv2D(s2) - LeakyReLU(0.2) x2,
GlobalMaxPooling2D, Dense(1) logits) and a generator (Dense(7*7*c) -
LeakyReLU - Reshape - Conv2DTranspose(4, s2) - LeakyReLU x2 - Conv2D(1, 7,
sigmoid)), wrapped in a `keras.Model` subclass with no `call` whose
`compile(d_optimizer, g_optimizer, loss_fn)` takes two Adam(3e-4) and a
`BinaryCrossentropy(from_logits=True)`; its `train_step` draws latent
vectors with a `SeedGenerator`, trains the discriminator on real and fake
images (noisy labels), then the generator through the frozen
discriminator, and returns two Mean trackers `d_loss`, `g_loss`;
`fit(dataset)` on a `tf.data` pipeline of images only (no targets). The
digits are generated (`_data.digit_images`): 3,200 images (70,000), 6 epochs (30), and
the channel counts are cut by 2-4x (CPU).

A healthy GAN: `d_loss` and `g_loss` move against each other around
0.45-1.1 (d_loss 0.62 -> 0.51, g_loss 0.77 -> 1.09 over 6 epochs), neither
diverges nor goes to 0.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from keras import ops

from real_runs import _data
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "DCGAN: train_step with 2 tapes, 2 Adam optimizers, logs d_loss/g_loss (no 'loss')"
MODELLED_ON = "keras-io examples/generative/dcgan_overriding_train_step.py"
TRUTH = Truth("healthy", measured="or-declared",
              note="two losses, two optimizers: measured on them, or declared unmeasurable")

LATENT_DIM = 64


def build_discriminator():
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.GlobalMaxPooling2D(),
            layers.Dense(1),
        ],
        name="discriminator",
    )


def build_generator():
    return keras.Sequential(
        [
            keras.Input(shape=(LATENT_DIM,)),
            layers.Dense(7 * 7 * 64),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((7, 7, 64)),
            layers.Conv2DTranspose(64, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(32, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (7, 7), padding="same", activation="sigmoid"),
        ],
        name="generator",
    )


class GAN(keras.Model):
    def __init__(self, discriminator, generator, latent_dim):
        super().__init__(name="dcgan")
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, real_images):
        batch_size = ops.shape(real_images)[0]
        random_latent_vectors = keras.random.normal(
            shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        generated_images = self.generator(random_latent_vectors)
        combined_images = ops.concatenate([generated_images, real_images], axis=0)
        labels = ops.concatenate(
            [ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0)
        labels += 0.05 * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)

        with tf.GradientTape() as tape:
            predictions = self.discriminator(combined_images)
            d_loss = self.loss_fn(labels, predictions)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        random_latent_vectors = keras.random.normal(
            shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        misleading_labels = ops.zeros((batch_size, 1))
        with tf.GradientTape() as tape:
            predictions = self.discriminator(self.generator(random_latent_vectors))
            g_loss = self.loss_fn(misleading_labels, predictions)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))

        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def run(callbacks, seed, quick=False):
    images, _ = _data.digit_images(512 if quick else 3200, seed)
    all_digits = np.reshape(images.astype("float32") / 255, (-1, 28, 28, 1))
    dataset = (tf.data.Dataset.from_tensor_slices(all_digits)
               .shuffle(buffer_size=1024, seed=seed).batch(64).prefetch(32))
    gan = GAN(discriminator=build_discriminator(), generator=build_generator(),
              latent_dim=LATENT_DIM)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        g_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    history = gan.fit(dataset, epochs=1 if quick else 6, verbose=0, callbacks=callbacks())
    return Outcome([gan], [history], {
        "d_loss": [round(v, 3) for v in history.history["d_loss"]],
        "g_loss": [round(v, 3) for v in history.history["g_loss"]]})
