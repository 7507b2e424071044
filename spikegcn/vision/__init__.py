r"""Vision models and data: CIFAR ResNet-20/32/44/56 (pretrained), a VGG-style net, LeNet-5, and loaders for
CIFAR-10 (the official release, and the JPEG version ``cifar10-jpg``), MNIST and sklearn digits. The seeded
training loop lives with the experiments (:mod:`spikegcn.experiments.cnn_train`).

The models are plain :mod:`torch.nn` modules written for :mod:`torch.fx` conversion (one :class:`~torch.nn.ReLU`
module per use, pooling and shortcuts as modules); the data loaders need Pillow (JPEG) and scikit-learn (digits)
only when those datasets are used. torchvision is not used.
"""
from .cifar import DATASETS, load_cifar10, load_dataset, preprocess
from .data import (
    CIFAR10_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    MNIST_MEAN,
    MNIST_STD,
    load_cifar10_jpg,
    load_digits,
    load_mnist,
)
from .loaders import (
    BatchLoader,
    Normalize,
    cifar10_loader,
    digits_loader,
    mnist_loader,
    normalize,
    random_crop_flip,
    tensor_dataloader,
)
from .models import (
    MODELS,
    PRETRAINED,
    VGG,
    BasicBlock,
    CifarResNet,
    LeNet5,
    OptionAShortcut,
    VisionTracer,
    get_model,
    lenet5,
    load_pretrained,
    pretrained_path,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    symbolic_trace,
    vgg_cifar,
)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR_MEAN", "CIFAR_STD", "MNIST_MEAN", "MNIST_STD",
    "DATASETS", "load_dataset", "preprocess", "load_cifar10_jpg",
    "BatchLoader", "Normalize", "cifar10_loader", "digits_loader", "load_cifar10", "load_digits", "load_mnist",
    "mnist_loader", "normalize", "random_crop_flip", "tensor_dataloader",
    "MODELS", "PRETRAINED", "BasicBlock", "CifarResNet", "LeNet5", "OptionAShortcut", "VGG", "VisionTracer",
    "get_model", "lenet5", "load_pretrained", "pretrained_path", "resnet20", "resnet32", "resnet44", "resnet56",
    "symbolic_trace", "vgg_cifar",
]
