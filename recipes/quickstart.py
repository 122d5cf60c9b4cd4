"""Train a small ResNet on CIFAR-10 with PUGD: the shortest useful example.

    TFDS_DATA_DIR=../shared/datasets/tensorflow_datasets \
        python recipes/quickstart.py --train-examples 2000 --epochs 2

Runs offline when `--data-dir` (or `TFDS_DATA_DIR`) points at a folder in
which tensorflow-datasets has prepared `cifar10`.
"""

import argparse

import keras

import keras_rts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="pugd",
                        choices=sorted(keras_rts.METHODS))
    parser.add_argument("--radius", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--data-dir", default=None,
                        help="prepared TFDS folder (default: TFDS_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train = keras_rts.data.cifar(
        "cifar10", "train", data_dir=args.data_dir,
        batch_size=args.batch_size, train_examples=args.train_examples,
        seed=args.seed)
    test = keras_rts.data.cifar("cifar10", "test", data_dir=args.data_dir,
                                batch_size=1000)
    model = keras_rts.RTSModel(keras_rts.models.small_resnet(10),
                               method=args.method, radius=args.radius,
                               weight_decay=5e-4)
    steps = args.epochs * (args.train_examples // args.batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(args.lr, steps),
            momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, epochs=args.epochs, validation_data=test)
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"{args.method}: test top-1 {accuracy:.4f} after {args.epochs} "
          f"epochs on {args.train_examples} images, "
          f"{int(model.grad_evals.numpy())} gradient evaluations")


if __name__ == "__main__":
    main()
