"""NIID-Bench's Fashion-MNIST label skew (Li et al. 2021, arXiv 2102.02079).

10 parties, all participating, 50 rounds, 10 local epochs, batch 64, SGD lr 0.01
momentum 0.9, simple-CNN; label skew Dir(0.5) by default, or #C=k:

    fedjax-gen run niid_fmnist algorithm=fedprox --workdir W
    fedjax-gen run niid_fmnist partition=label_k classes_per_client=2 --workdir W

NIID-Bench evaluates the global model on the test set (`global_accuracy`), and each party
trains on its whole partition: data.test_fraction=0.
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="dirichlet", alpha=0.5, num_clients=10,
                clients_per_round=10, rounds=50, local_epochs=10, batch_size=64, lr=0.01,
                momentum=0.9, model="simple_cnn", algorithm="fedavg", eval_every=1,
                checkpoint_every=1)
  config.data.update(test_fraction=0.0)
  config.fl.update(prox_mu=0.01)
  return config
