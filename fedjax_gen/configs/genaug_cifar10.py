"""Gen-FedSD and GenFL on CIFAR-10 with Stable Diffusion (needs a GPU and the SD weights).

The NIID-Bench setup on CIFAR-10 (10 parties, all participating, 50 rounds, 10 local
epochs, batch 64, SGD lr 0.01 momentum 0.9, Dir(0.5)) with ResNet-18, as in the GenFL paper
(arXiv 2503.20166); images come from Stable Diffusion v1-4 (Flax weights, `sd_revision`)
prompted "a photo of a {class name}" and resized to 32x32 (Gen-FedSD, arXiv 2405.07925):

    pip install -e '.[sd,tfds]'
    fedjax-gen run genaug_cifar10 algorithm=gen_fedsd --workdir W
    fedjax-gen run genaug_cifar10 algorithm=genfl --workdir W
    fedjax-gen run genaug_cifar10 sd_model=/path/to/local/pipeline ...   # offline weights

`sd_model` is a Hugging Face id (downloaded once into the Hub cache) or a local diffusers
folder (see `fedjax_gen/diffusion/stable_diffusion.py`). `fill_rule=max` under Dir(0.5)
asks for tens of thousands of 512x512 SD samples: hours on one GPU; cap it with
`fill_rule=budget fill_budget=N`.
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="cifar10", partition="dirichlet", alpha=0.5, num_clients=10,
                clients_per_round=10, rounds=50, local_epochs=10, batch_size=64, lr=0.01,
                momentum=0.9, model="resnet18", algorithm="fedavg", test_fraction=0.0,
                eval_every=1, checkpoint_every=1,
                generator="sd", sd_model="CompVis/stable-diffusion-v1-4", sd_revision="flax",
                sd_dtype="bfloat16", generator_sample_steps=50, generator_guidance=7.5,
                generator_batch_size=16, fill_rule="max", genfl_synthetic_per_class=500,
                genfl_share=0.2, genfl_server_steps=20)
  return config
