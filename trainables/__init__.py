"""One module per thesis method. Each defines `Config` and `train(config, session)`; no Ray here."""
