"""A corpus of realistic training scripts with a known truth each.

Each module imitates a real Keras script (named in its `MODELLED_ON`) on
generated look-alike data; see `_common` for what a script provides and
`benchmarks/bench_real_runs.py` for the harness that runs them with and
without `GradWatch` and checks what it says against the truth.
"""

# In the order the harness runs and prints them.
SCRIPTS = (
    "seq2seq",
    "padded_text",
    "weather_forecast",
    "char_lm",
    "tbptt_sensor",
    "mnist_cnn",
    "relu_rnn_blowup",
    "lr_fault",
    "custom_train_step",
    "ctc_add_loss",
    "many_models",
    "forda_conv1d",
    "transformer_text",
    "vae",
    "dcgan",
)
