"""PFLlib's personalized-FL benchmark on Fashion-MNIST (arXiv 2312.04992).

20 clients, all participating, each client's data split 75/25 into local train/test,
PFLlib's 4-layer CNN, 1 local epoch of batch 10, SGD lr 0.005; splits "pathological"
(PFLlib's: 2 consecutive classes per client, partition=pathological classes_per_client=2,
the default), NIID-Bench's #C=2 (partition=label_k: the second class at random) and
Dirichlet 0.1. The metric is personalized accuracy: each client's model on its local
test split.

    fedjax-gen run pfllib_fmnist algorithm=fedper --workdir W
    fedjax-gen run pfllib_fmnist algorithm=fedper partition=label_k classes_per_client=2 --workdir W
    fedjax-gen run pfllib_fmnist algorithm=ditto partition=dirichlet alpha=0.1 --workdir W

Differences from PFLlib: its clients share all 70,000 images; here they share the 60,000
training images and the 10,000 test images are the global test set. PFLlib runs 2000 rounds.
APFL starts from PFLlib's mixing weight (`-al 1.0`: the personal model alone; ours
otherwise starts at 0.5), and trains the personal model on the mixed loss as the paper
does (PFLlib trains it on its own loss).
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="pathological", classes_per_client=2,
                alpha=0.1, num_clients=20, clients_per_round=20, rounds=2000, local_epochs=1,
                batch_size=10, lr=0.005, momentum=0.0, model="cnn4", algorithm="fedavg",
                eval_every=1, checkpoint_every=1)
  config.data.update(test_fraction=0.25, min_client_size=40)
  config.personalized.update(finetune_steps=10, newcomer_steps=20, apfl_alpha=1.0)
  return config
