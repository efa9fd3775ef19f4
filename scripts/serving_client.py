"""Send images to a TensorFlow Serving server running the AlexNet export and print the top-5.

    python scripts/serving_client.py cat.jpg dog.png                       # REST, localhost:8501
    python scripts/serving_client.py cat.jpg --server http://host:8501 --version 2
    python scripts/serving_client.py cat.jpg --protocol grpc --grpc_target host:8500

REST needs only the Python standard library. gRPC needs the `serving` extra
(`pip install keras_alexnet[serving]`: tensorflow-serving-api, which requires the full
`tensorflow` package). One request per image, so a file the server rejects (not an image:
INVALID_ARGUMENT) gets a one-line error and the others are still answered. See docs/serving.md.
"""

import base64
import json
import sys
import urllib.error
import urllib.request

from absl import flags


def define_flags():
    """The flags, defined only when run as a script (tests import the request builders)."""
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "rest: JSON over HTTP (port 8501); grpc: PredictionService (port 8500).")
    flags.DEFINE_string("server", "http://localhost:8501", "REST endpoint of the model server.")
    flags.DEFINE_string("grpc_target", "localhost:8500", "gRPC host:port of the model server.")
    flags.DEFINE_string("model", "alexnet", "Model name in the server's models.config (or MODEL_NAME).")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    flags.DEFINE_string("signature", "serving_default", "Signature taking encoded images as `image_bytes`.")
    flags.DEFINE_float("timeout", 30.0, "Seconds to wait for each response.")


FLAGS = flags.FLAGS

IMAGE_BYTES_INPUT = "image_bytes"
# What a refused connection most often means, and where the command that starts it is.
NOT_RUNNING = "is TF Serving running there? docs/serving.md starts it"


class ServingError(RuntimeError):
    """The server answered with an error (its message), or could not be reached. `server_wide`:
    the same answer awaits every image (no server, no such model), so the others are not sent."""

    def __init__(self, message, server_wide=False):
        super().__init__(message)
        self.server_wide = server_wide


def first_line(message):
    """Server errors carry TensorFlow's node details on later lines: keep the first."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def rest_url(server, model, version=None):
    """POST http://host:port/v1/models/${MODEL_NAME}[/versions/${VERSION}]:predict (TF Serving's REST API)."""
    path = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version is not None else "")
    return server.rstrip("/") + path + ":predict"


def rest_request_body(images, signature="serving_default"):
    """The row-format request: one instance per image, the bytes as {"b64": ...}.

    With a single named input, each instance is that input's value (TF Serving's api_rest.md).
    """
    return {
        "signature_name": signature,
        "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
    }


def rest_predict(url, body, timeout=30.0):
    """POST the body; returns the "predictions" list (one dict of outputs per image)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):  # TF Serving answers errors in JSON: this is another server
            raise ServingError(f"HTTP {error.code} from {url}, not in TF Serving's JSON ({first_line(detail)[:60]}): "
                               "is --server the REST port of TF Serving (8501)?", server_wide=True) from None
        if error.code == 404:  # TF Serving: "Servable not found for request: Latest(name)"
            raise ServingError(f"HTTP 404 from {url}: {first_line(detail)}: the server has no such model or version "
                               "(check --model, --version and --server)", server_wide=True) from None
        raise ServingError(f"HTTP {error.code}: {first_line(detail)}") from None
    except urllib.error.URLError as error:
        raise ServingError(f"cannot reach {url}: {error.reason}: {NOT_RUNNING}", server_wide=True) from None


def grpc_request(images, model, version=None, signature="serving_default"):
    """A tensorflow.serving.PredictRequest with the images as a string tensor [N]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[IMAGE_BYTES_INPUT].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    return request


def grpc_predict(target, request, timeout=30.0):
    """Call PredictionService.Predict; returns one dict of outputs per image, like REST."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            server_wide = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED)
            fix = f": {NOT_RUNNING}" if error.code() == grpc.StatusCode.UNAVAILABLE else ""
            raise ServingError(f"{error.code().name}: {first_line(error.details())}{fix}", server_wide) from None
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    count = len(next(iter(outputs.values())))
    rows = []
    for i in range(count):
        row = {}
        for name, values in outputs.items():
            value = values[i].tolist()
            row[name] = [v.decode() for v in value] if name == "top_k_labels" else value
        rows.append(row)
    return rows


def format_top_k(path, prediction):
    lines = [path]
    for rank, (label, score) in enumerate(zip(prediction["top_k_labels"], prediction["top_k_scores"]), start=1):
        lines.append(f"  {rank}. {score:.4f}  {label}")
    return "\n".join(lines)


def predict_one(image):
    if FLAGS.protocol == "rest":
        url = rest_url(FLAGS.server, FLAGS.model, FLAGS.version)
        return rest_predict(url, rest_request_body([image], FLAGS.signature), FLAGS.timeout)[0]
    request = grpc_request([image], FLAGS.model, FLAGS.version, FLAGS.signature)
    return grpc_predict(FLAGS.grpc_target, request, FLAGS.timeout)[0]


def main(argv):
    paths = argv[1:]
    if not paths:
        cli.fail("name one or more image files: serving_client.py IMAGE ...")
    if FLAGS.protocol == "rest" and not FLAGS.server.startswith(("http://", "https://")):
        cli.fail(f"--server={FLAGS.server}: give the REST endpoint as http://host:port (TF Serving's REST port is 8501).")
    if FLAGS.protocol == "grpc":
        try:
            import tensorflow_serving.apis  # noqa: F401
        except ImportError:
            cli.fail("--protocol grpc needs tensorflow-serving-api: pip install 'keras_alexnet[serving]'.")
    failed = 0
    for position, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                image = f.read()
            print(format_top_k(path, predict_one(image)), flush=True)
        except OSError as error:
            print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
            failed += 1
        except ServingError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
            left = len(paths) - position - 1  # not paths.index(path): a path given twice is found at its first place
            if error.server_wide and left:
                print(f"error: {left} more image{'s' if left > 1 else ''} not sent: the server would answer "
                      f"{'them' if left > 1 else 'it'} the same", file=sys.stderr)
                failed += left
                break
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    import _cli as cli  # here, not at the top: tests load this file from elsewhere for its request builders

    define_flags()
    cli.run(main, positional=True)
