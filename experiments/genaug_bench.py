"""Generative augmentation on Fashion-MNIST: FedAvg vs Gen-FedSD vs GenFL vs AIGC-only.

NIID-Bench's Fashion-MNIST setup (`fedjax_gen/configs/genaug_fmnist.py`) on #C=2, Dir(0.1)
and Dir(0.5); the generator is the federated DDPM of `ddpm_fmnist` (trained on the same
kind of clients, so no image leaves a client), which must exist first:

    fedjax-gen run ddpm_fmnist --workdir experiments/runs/ddpm_fmnist/federated
    python experiments/genaug_bench.py --seeds 0 1 2              # the paper's 50 rounds
    python experiments/genaug_bench.py --rounds 5 --splits c2 --set genaug.fill_rule=budget genaug.fill_budget=500

Every cell runs the same `train_and_evaluate` as `fedjax-gen run genaug_fmnist` (see
`experiments/tables.py` for seeds, resuming, extending and --report-only). It writes into
`./fedjax-gen-out/genaug_bench`; the committed `experiments/RESULTS.md` only with
--update-reports. The table shows global test accuracy, the first round at 80% (the
communication saving the papers claim) and, below it, the generation cost in seconds.
"""

import sys

from tables import Table, main

ALGORITHMS = ("fedavg", "gen_fedsd", "genfl", "aigc_only")

TABLE = Table(
    name="genaug_fmnist",
    title="Generative augmentation, Fashion-MNIST (global test accuracy, %)",
    setup=("Setup of `fedjax_gen/configs/genaug_fmnist.py`: NIID-Bench (10 clients, all "
           "participating, 10 local epochs, batch 64, SGD lr 0.01 momentum 0.9, simple-CNN); "
           "generator: the federated class-conditional DDPM of `ddpm_fmnist`, sampled with 25 "
           "DDIM steps at guidance 4 (its CAS there is in the DDPM table: the quality of "
           "the synthetic images bounds what they can add). "
           "Published: NIID-Bench's FedAvg after 50 rounds; Gen-FedSD and GenFL publish no "
           "Fashion-MNIST numbers. Measured: after the rounds shown, with the overrides in "
           "each cell's `command` in `results/genaug_fmnist.json`."),
    metric="global_accuracy",
    splits={"c2": ("#C=2", ["partition=label_k", "classes_per_client=2"]),
            "dir0.1": ("Dir(0.1)", ["partition=dirichlet", "alpha=0.1"]),
            "dir0.5": ("Dir(0.5)", ["partition=dirichlet", "alpha=0.5"])},
    algorithms=ALGORITHMS,
    published={"c2": {"fedavg": 77.3}, "dir0.1": {}, "dir0.5": {"fedavg": 88.1}},
    target=0.8,
    cost_keys=("generation_s",))

if __name__ == "__main__":
  sys.exit(main(TABLE, doc=__doc__))
