"""Gen-FedSD and GenFL on CIFAR-10 with Stable Diffusion (needs a GPU, SD weights).

The NIID-Bench setup on CIFAR-10 (10 parties, all participating, 50 rounds, 10 local
epochs, batch 64, SGD lr 0.01 momentum 0.9, Dir(0.5)) with ResNet-18, as in the GenFL paper
(arXiv 2503.20166); images come from Stable Diffusion v1-4 (Flax weights, `genaug.sd_revision`)
prompted "a photo of a {class name}" and resized to 32x32 (Gen-FedSD, arXiv 2405.07925):

    pip install -e '.[sd,tfds]'
    fedjax-gen run genaug_cifar10 algorithm=gen_fedsd --workdir W
    fedjax-gen run genaug_cifar10 algorithm=genfl --workdir W
    fedjax-gen run genaug_cifar10 genaug.sd_model=/path/to/local/pipeline ...   # offline weights

`genaug.sd_model` is a Hugging Face id (downloaded once into the Hub cache) or a local diffusers
folder (see `fedjax_gen/diffusion/stable_diffusion.py`). `genaug.fill_rule=max` under Dir(0.5)
asks for tens of thousands of 512x512 SD samples: hours on one GPU; cap it with
`genaug.fill_rule=budget genaug.fill_budget=N`.
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="cifar10", partition="dirichlet", alpha=0.5, num_clients=10,
                clients_per_round=10, rounds=50, local_epochs=10, batch_size=64, lr=0.01,
                momentum=0.9, model="resnet18", algorithm="fedavg", eval_every=1,
                checkpoint_every=1)
  config.data.update(test_fraction=0.0)
  config.genaug.update(generator="sd", sd_model="CompVis/stable-diffusion-v1-4",
                       sd_revision="flax", sd_dtype="bfloat16", sample_steps=50, guidance=7.5,
                       batch_size=16, fill_rule="max")
  config.genfl.update(synthetic_per_class=500, share=0.2, server_steps=20)
  return config
