"""Generator quality: a classifier score and a Frechet distance.

Both use a classifier trained on the real training set (the MNIST analogues of
the Inception score, Salimans et al. 2016, and FID, Heusel et al. 2017):

- classifier score = exp(E_x KL(p(y|x) || p(y))), between 1 and the number of
  classes; high when samples are confidently classified and all classes occur;
- Frechet distance between Gaussians fitted to the classifier's penultimate
  features of generated and real images: ||mu1 - mu2||^2 +
  Tr(S1 + S2 - 2 (S1 S2)^(1/2)); 0 for identical statistics.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf


def classifier_score(probabilities: np.ndarray, eps: float = 1e-12) -> float:
    """exp of the mean KL divergence between p(y|x) and the marginal p(y)."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be [N, classes], got {p.shape}")
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^(1/2)) is computed as Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), which is
    symmetric positive semi-definite, so no complex square roots arise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrtm_psd(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_cross = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    value = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_cross
    return float(max(value, 0.0))


def feature_model(classifier: keras.Model) -> keras.Model:
    """Maps images to (penultimate features, probabilities) of a logits classifier."""
    inputs = keras.Input(shape=classifier.input_shape[1:])
    x = inputs
    for layer in classifier.layers[:-1]:
        if not isinstance(layer, keras.layers.InputLayer):  # functional models list it
            x = layer(x)
    features = keras.layers.Flatten(name="penultimate_features")(x)
    logits = classifier.layers[-1](x)
    return keras.Model(inputs, [features, keras.layers.Softmax(name="probabilities")(logits)])


def statistics(classifier: keras.Model, images: np.ndarray, batch_size: int = 500):
    """Mean and covariance of penultimate features, and the class probabilities."""
    model = feature_model(classifier)
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        f, p = model(images[start:start + batch_size], training=False)
        feats.append(f.numpy())
        probs.append(p.numpy())
    feats = np.concatenate(feats).astype(np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False), np.concatenate(probs)


def sample(generator: keras.Model, num: int, *, seed: int = 0,
           batch_size: int = 500) -> np.ndarray:
    """Draws ``num`` images G(z), z ~ N(0, I), reproducibly from ``seed``."""
    latent = int(generator.input_shape[-1])
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - start)
        z = tf.random.stateless_normal([n, latent], seed=[seed, i])
        out.append(generator(z, training=False).numpy())
    return np.concatenate(out) if out else np.zeros((0,) + generator.output_shape[1:])


def generator_quality(generator: keras.Model, classifier: keras.Model,
                      real_images: np.ndarray, *, num_samples: int = 10_000,
                      reference_images: Optional[np.ndarray] = None,
                      seed: int = 0) -> dict:
    """Classifier score and Frechet distance of ``generator`` against ``real_images``.

    Args:
      generator: z -> image model.
      classifier: logits classifier trained on the real training set.
      real_images: real images (the test set) to compare with.
      num_samples: generated images to draw.
      reference_images: other real images (e.g. the validation set); when
        given, the same two figures for them against ``real_images`` are
        returned as the ceiling a perfect generator would reach.
      seed: seed of the drawn z.

    Returns:
      dict with ``classifier_score``, ``frechet_distance`` and, with reference
      images, ``real_classifier_score`` and ``real_frechet_distance``.
    """
    fake = sample(generator, num_samples, seed=seed)
    mu_r, sigma_r, probs_r = statistics(classifier, real_images)
    mu_f, sigma_f, probs_f = statistics(classifier, fake)
    result = {
        "num_samples": int(num_samples),
        "num_real": int(len(real_images)),
        "classifier_score": classifier_score(probs_f),
        "frechet_distance": frechet_distance(mu_f, sigma_f, mu_r, sigma_r),
        "real_classifier_score_of_compared_set": classifier_score(probs_r),
    }
    if reference_images is not None:
        mu_v, sigma_v, probs_v = statistics(classifier, reference_images)
        result["real_classifier_score"] = classifier_score(probs_v)
        result["real_frechet_distance"] = frechet_distance(mu_v, sigma_v, mu_r, sigma_r)
    return result
