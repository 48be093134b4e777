"""Look-alike datasets, generated and seeded (nothing can be downloaded here).

Each has the format of the real dataset it stands for and a signal a model
can learn, so that a healthy run's loss really falls.
"""

import numpy as np

# Jena climate's features as the keras-io example selects them.
WEATHER_FEATURES = ("p (mbar)", "T (degC)", "VPmax (mbar)", "VPdef (mbar)", "sh (g/kg)",
                    "rho (g/m**3)", "wv (m/s)")


def weather(rows, seed, per_hour=6):
    """A Jena-climate-like table: one row per 10 minutes, 7 features.

    Temperature follows a daily and a yearly cycle plus weather systems (an
    AR(1) anomaly lasting days); pressure moves against the anomaly, vapour
    pressures follow temperature, wind is gusty noise. So the temperature
    12 hours ahead is predictable from the past days, but not exactly.

    Returns:
        float32 array `(rows, 7)`, in physical units (not normalised).
    """
    rng = np.random.default_rng(seed)
    hours = np.arange(rows) / per_hour
    anomaly = np.zeros(rows)
    shocks = rng.normal(0.0, 0.08, rows)
    for i in range(1, rows):  # weather systems: a correlation time of ~2 days
        anomaly[i] = 0.9983 * anomaly[i - 1] + shocks[i]
    daily = -np.cos(2 * np.pi * hours / 24)
    yearly = -np.cos(2 * np.pi * hours / (24 * 365))
    temp = 9 + 9 * yearly + 4 * daily + 2.5 * anomaly + rng.normal(0, 0.3, rows)
    pressure = 989 - 3.0 * anomaly + 2 * yearly + rng.normal(0, 0.4, rows)
    vp_max = 6.1 * np.exp(17.6 * temp / (temp + 243.0))
    humidity = np.clip(0.75 - 0.15 * daily + 0.05 * anomaly + rng.normal(0, 0.05, rows), 0.2, 1)
    vp_def = vp_max * (1 - humidity)
    sh = 6.2 * vp_max * humidity / pressure
    rho = 1.2e5 * pressure / (287.0 * (temp + 273.15)) / 100
    wind = np.abs(2 + 1.2 * rng.standard_normal(rows) + 0.5 * np.abs(anomaly))
    table = np.stack([pressure, temp, vp_max, vp_def, sh, rho, wind], axis=1)
    return table.astype("float32")


def normalize(table, train_rows):
    """The keras-io example's normalisation: train mean and std."""
    mean = table[:train_rows].mean(axis=0)
    std = table[:train_rows].std(axis=0)
    return ((table - mean) / std).astype("float32")


def digit_images(count, seed, size=28):
    """MNIST-like images: 10 digit shapes drawn with strokes, jittered.

    Each class has a fixed stroke skeleton (a few line segments on a 28x28
    canvas); every image draws it shifted by up to 3 pixels, with random
    stroke width and intensity, slight per-point wobble and background
    noise: the classes overlap in pixels, a convnet separates them.

    Returns:
        `(images, labels)`: uint8 `(count, size, size)` in 0..255 and int
        labels `(count,)` in 0..9.
    """
    skeletons = _digit_skeletons(size)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    images = np.zeros((count, size, size), dtype="float32")
    for i, label in enumerate(labels):
        dy, dx = rng.integers(-3, 4, 2)
        width = rng.uniform(0.9, 1.8)
        canvas = np.zeros((size, size), dtype="float32")
        for (y0, x0), (y1, x1) in skeletons[label]:
            for t in np.linspace(0, 1, 12):
                cy = y0 + t * (y1 - y0) + dy + rng.normal(0, 0.4)
                cx = x0 + t * (x1 - x0) + dx + rng.normal(0, 0.4)
                canvas = np.maximum(canvas, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                                   / (2 * width ** 2)))
        canvas = canvas * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.15, (size, size))
        images[i] = np.clip(canvas, 0, 1)
    return (images * 255).astype("uint8"), labels


def digit_glyph(digit, height, width, stroke=0.8):
    """One digit's skeleton drawn in a small `(height, width)` box, float 0..1."""
    yy, xx = np.mgrid[0:height, 0:width].astype("float32")
    glyph = np.zeros((height, width), dtype="float32")

    def place(y, x):  # the skeleton spans y 6..22, x 9..19 on its 28x28 canvas
        return 1 + (y - 6) / 16 * (height - 3), 1 + (x - 9) / 10 * (width - 3)

    for start, end in _digit_skeletons(28)[digit]:
        (y0, x0), (y1, x1) = place(*start), place(*end)
        for t in np.linspace(0, 1, 16):
            cy, cx = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            glyph = np.maximum(glyph, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                             / (2 * stroke ** 2)))
    return glyph


def _digit_skeletons(size):
    """Line segments per digit on a size x size canvas (y, x)."""
    s = size / 28.0
    top, mid, bottom, left, right = 6 * s, 14 * s, 22 * s, 9 * s, 19 * s
    tl, tr, ml, mr, bl, br = (top, left), (top, right), (mid, left), (mid, right), \
        (bottom, left), (bottom, right)
    return [
        [(tl, tr), (tr, br), (br, bl), (bl, tl)],                        # 0
        [((top, 14 * s), (bottom, 14 * s)), ((8 * s, 11 * s), (top, 14 * s))],  # 1
        [(tl, tr), (tr, mr), (mr, bl), (bl, br)],                        # 2
        [(tl, tr), (tr, br), (br, bl), (ml, mr)],                        # 3
        [(tl, ml), (ml, mr), (tr, br)],                                  # 4
        [(tr, tl), (tl, ml), (ml, mr), (mr, br), (br, bl)],              # 5
        [(tr, tl), (tl, bl), (bl, br), (br, mr), (mr, ml)],              # 6
        [(tl, tr), (tr, (bottom, 12 * s))],                              # 7
        [(tl, tr), (tr, br), (br, bl), (bl, tl), (ml, mr)],              # 8
        [(mr, ml), (ml, tl), (tl, tr), (tr, br), (br, bl)],              # 9
    ]


# A tiny English-like grammar for character-level text.
_SUBJECTS = ("the man", "a woman", "the old dog", "my friend", "the philosopher",
             "every child", "the morning", "our teacher")
_VERBS = ("sees", "loves", "follows", "forgets", "remembers", "greets", "questions",
          "believes")
_OBJECTS = ("the river", "a small house", "the truth", "his shadow", "the long road",
            "her brother", "the evening light", "a strange idea")
_ENDINGS = (".", ".", ".", "!", "?", ", and then it rains.", ", because it is late.")


def english_text(chars, seed):
    """Lowercase text from a small grammar (subject verb object ending),
    with a few fixed phrases repeating: a character LM's loss falls from
    log(vocabulary) to well under 1 nat per character."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < chars:
        sentence = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
                    f"{rng.choice(_OBJECTS)}{rng.choice(_ENDINGS)} ")
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)[:chars]
