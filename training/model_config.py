"""The model's settings: sizes, decoder, and the optional parts (hints, gated mix, history,
catchment memory and its riverflow), as a dataclass the training config fills and the
checkpoint stores; ``ModelConfig.preset`` gives the named sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

DECODERS = ("mae", "cross")
PRESETS = ("tiny", "small", "full")


@dataclass
class ModelConfig:
    dim: int = 256
    depth: int = 6
    heads: int = 8
    decoder: str = field(default="mae", metadata={"choices": DECODERS})
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mlp_ratio: float = 4.0
    cross_fraction: float = 1.0  # CrossMAE: share of masked tokens reconstructed per step
    # "visible": MAE, masked tokens removed from the encoder; "all": the ablation MAE is
    # measured against (SimMIM-style), every token encoded with a learned mask token in place
    encoder_tokens: str = field(default="visible", metadata={"choices": ("visible", "all")})
    # mask queries carry the visible values' interpolation in time and neighbours' mean
    hints: bool = True
    # the hints' mix changed per masked position by a gate on the decoder's output
    # (training.hints); off: one mix per group
    gated_mix: bool = False
    # image tokens a day the encoder takes at most when more are visible (the catchment's
    # patches first); 0: the specification's visible count, N_valid - floor(0.75 N_valid)
    image_tokens_per_day: int = 0
    # days of the catchment's weather before the window, added to the static token as
    # means over bins of history_bin days (0: none; the loader's history_days must match)
    history_days: int = 0
    history_bin: int = 5
    # the catchment's memory (training.memory): an LSTM over the catchment's days (the
    # history_days before the window, then the window's) for the series' queries
    memory: bool = False
    # the memory also predicts riverflow on the history days, a training target there (the
    # gauge's record before the window; never an input)
    history_flow: bool = False
    # the memory's riverflow on the window's days is one of riverflow's hints, a kind the
    # mix weighs against interpolation in time (needs history_flow and hints); it then
    # never reads the window's flow, and the window's days are its targets too
    flow_fill: bool = False
    # the series' queries and the gate carry how near the nearest visible days are
    # (training.hints.visible_nearness; needs hints)
    nearness: bool = False
    # the window's loss stops at the memory: the decoder reads its states and riverflow
    # through a stop-gradient, so the memory learns from its own riverflow terms alone
    # (needs history_flow)
    memory_detach: bool = False

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        presets = {
            # CPU tests
            "tiny": cls(dim=32, depth=2, heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2),
            # a CPU run of half an hour: the learning run of record
            "small": cls(
                dim=64, depth=3, heads=4, decoder_dim=64, decoder_depth=1, decoder_heads=4
            ),
            # a GPU
            "full": cls(),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; known: {sorted(presets)}")
        return presets[name]
