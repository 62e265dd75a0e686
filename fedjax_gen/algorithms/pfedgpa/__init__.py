"""pFedGPA (arXiv 2409.05701): personalized FL by diffusion-based generative parameter
aggregation. See `algorithm.py` for the method and our choices."""

from fedjax_gen.algorithms.pfedgpa.aggregate import (guided_denoise, inversion_timesteps,
                                          invert_denoise, train_denoiser)
from fedjax_gen.algorithms.pfedgpa.algorithm import (AGGREGATIONS, GUIDANCE, PFedGPAClientState,
                                          OPTIONS, PFedGPAOptions, PFedGPAServerState,
                                                     check_options,
                                          options_from_config, pfedgpa)
from fedjax_gen.algorithms.pfedgpa.denoiser import DENOISERS, TokenTransformer, make_denoiser
from fedjax_gen.algorithms.pfedgpa.tokenize import TokenLayout, make_layout

__all__ = [
    "AGGREGATIONS", "DENOISERS", "OPTIONS", "GUIDANCE", "PFedGPAClientState", "PFedGPAOptions",
    "PFedGPAServerState", "TokenLayout", "TokenTransformer", "check_options",
    "guided_denoise", "inversion_timesteps", "invert_denoise", "make_denoiser",
    "make_layout", "options_from_config", "pfedgpa", "train_denoiser",
]
