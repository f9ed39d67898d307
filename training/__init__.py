"""hydromae's multi-modal MAE: model, loss, trainer, evaluation and embeddings."""


def load_encoder(checkpoint_path, data=None):
    """The trained encoder of a checkpoint as a module (see ``training.embed``)."""
    from training.embed import load_encoder as load

    return load(checkpoint_path, data)
