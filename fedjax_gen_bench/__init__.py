"""fedjax-gen's benchmarks, installed with the package but apart from the `fedjax_gen` library.

`round_bench` (`fedjax-gen bench`) times one FedAvg round of fedjax_gen against a JAX loop,
PyTorch and FedJAX; `baselines` holds those runners, timed in-process (notebook 05);
`reports` decides where every benchmark and experiment script writes. The torch and FedJAX
runners need `pip install "fedjax-gen[bench]"`; the library itself never imports them.
"""
