"""The report, rebuilt from MLflow into reports/README.md and figures, in layers (each imports only those above):

- `text`, `markdown`: numbers as the sentences write them; the markdown-table writer.
- `load`: MLflow -> tidy pandas frames (`Study`: one experiment's runs, with loaders for histories and artifacts).
- `frames`: the transforms shared by figures and findings (selections, labels, medians and quartiles).
- `figures`: drawing only, frames -> matplotlib Figure. `findings`: frames -> `Finding` (text and numbers).
- `sections`: the table of the report's sections. `build`: walks it into a `Report`. `cli`: writes it.

The report imports nothing of rnngrad but `rnngrad.store`, so it runs without the model stack.
"""
