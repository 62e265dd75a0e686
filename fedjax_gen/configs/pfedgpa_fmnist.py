"""pFedGPA and personalized baselines on Fashion-MNIST (arXiv 2409.05701).

PFLlib's client split with the training setup of FedPAC (Xu et al., ICLR 2023), which
pFedGPA's authors follow.

20 clients, each split 75/25 into local train/test (PFLlib); 20% of them (4) held out as
new clients (`new_client_accuracy` after each algorithm's newcomer recipe), the other 16
all participating; 5 local epochs of batch 50, SGD lr 0.01 momentum 0.5, the FedPAC CNN
(conv16-conv32-fc128, `fedpac_cnn`). Splits: Dirichlet 0.1 (the default here) or
pathological (2 classes per client):

    fedjax-gen run pfedgpa_fmnist algorithm=pfedgpa partition=dirichlet alpha=0.1 --workdir W
    fedjax-gen run pfedgpa_fmnist algorithm=pfedgpa partition=label_k classes_per_client=2 --workdir W
    fedjax-gen run pfedgpa_fmnist algorithm=fedrep ... (fedavg, fedavg_ft, fedper, ditto, pfedme)
    python experiments/pfedgpa_bench.py --rounds 5            # the table, ablations, plots

pFedGPA's keys are `pfedgpa_*` (see `fedjax_gen/config.py` and `fedjax_gen/algorithms/pfedgpa/`).
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="dirichlet", alpha=0.1,
                classes_per_client=2, num_clients=20, clients_per_round=16, rounds=100,
                local_epochs=5, batch_size=50, lr=0.01, momentum=0.5, model="fedpac_cnn",
                algorithm="pfedgpa", eval_every=5, checkpoint_every=5)
  config.personalized.update(holdout_clients=0.2, finetune_steps=10, newcomer_steps=20)
  config.data.update(test_fraction=0.25, min_client_size=40)
  config.pfedgpa.update(buffer=32)
  return config
