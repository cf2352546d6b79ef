"""See what a model does: answer a question about one image, score image-sentence pairs, and draw
the paper's attention figures for the three encoders (with the numbers behind them and one
self-contained HTML page to explore them).

Neither the model (pure PyTorch) nor the launcher (processes, DeepSpeed): this package reads a
checkpoint (ours, Hugging Face's or the original release's) and records of a feature store, runs
the model with ``output_attentions`` and turns what it returns into answers, scores and figures.

- :mod:`interpret.subject`: the model, its tokenizer and answer table; one image and sentence
  made into model inputs.
- :mod:`interpret.queries`: ``ask`` (top answers) and ``match`` (cross-modality matching scores).
- :mod:`interpret.attention`: the attention maps of one example, as numbers, saved and read back.
- :mod:`interpret.figures`: PNG figures of those numbers (matplotlib).
- :mod:`interpret.page`: one HTML page with every figure and the interactive cross-attention view.
- :mod:`interpret.report`: `lxmert attention`'s folder (numbers, figures, page), written whole.
"""
