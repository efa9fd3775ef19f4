from setuptools import find_packages, setup

setup(
    name="keras_alexnet",
    version="0.1.0",
    description="The reference AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) for TensorFlow and Keras 3.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_alexnet", "keras_alexnet.*"]),
    python_requires=">=3.9",
    install_requires=[
        # 2.16 is the first TensorFlow with Keras 3; TPU VMs ship tensorflow-tpu 2.20.
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.x imports it without declaring it (tensorflow/datasets#11212).
        "importlib_resources",
        "absl-py",
        # TensorFlow 2.21 no longer pulls it in; tf.summary.scalar needs it.
        "tensorboard",
        "numpy",
        "pillow",
        "matplotlib",
    ],
    extras_require={
        # tensorflow-serving-api lets the tests parse warm-up records and build gRPC requests.
        # scikit-image: photographs for the test that training learns real images (keras_alexnet.photos);
        # scikit-learn: the classifier of scripts/photo_reference.py, tested end to end.
        "test": ["pytest>=7.3", "tensorflow-serving-api", "scikit-image", "scikit-learn"],
        # The packages whose photographs keras_alexnet.photos cuts into small real-photo datasets.
        "photos": ["scikit-image", "scikit-learn"],
        # gRPC client for TF Serving; needs the full `tensorflow` distribution, not tensorflow-cpu.
        "serving": ["tensorflow-serving-api"],
        "torch": ["torch==2.13.0"],
    },
)
