"""The report: loading runs from MLflow into pandas (`load`) and figure functions (`figures`)."""
