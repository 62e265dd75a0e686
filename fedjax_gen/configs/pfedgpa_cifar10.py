"""pFedGPA on CIFAR-10 (arXiv 2409.05701), pfedgpa_fmnist's setup; meant for a GPU.

The FedPAC-like setup of `pfedgpa_fmnist` on CIFAR-10 (needs tensorflow-datasets,
`pip install -e ".[tfds]"`).

20 clients (Dirichlet 0.1, 75/25 local train/test, 4 held out as new clients), 16
participating, 5 local epochs of batch 50, SGD lr 0.01 momentum 0.5, the FedPAC CNN
(conv16-conv32-fc128 on 32x32x3: 117,866 parameters, 461 tokens of 256):

    fedjax-gen run pfedgpa_cifar10 algorithm=pfedgpa --workdir W
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="cifar10", partition="dirichlet", alpha=0.1, classes_per_client=2,
                num_clients=20, clients_per_round=16, rounds=100, local_epochs=5,
                batch_size=50, lr=0.01, momentum=0.5, model="fedpac_cnn", algorithm="pfedgpa",
                eval_every=5, checkpoint_every=5)
  config.personalized.update(holdout_clients=0.2, finetune_steps=10, newcomer_steps=20)
  config.data.update(test_fraction=0.25, min_client_size=40)
  config.pfedgpa.update(buffer=32)
  return config
