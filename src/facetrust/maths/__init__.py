"""Mathematics below the models: special functions the models and the evaluation both use."""
