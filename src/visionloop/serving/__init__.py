"""Using the champion: batch prediction, the REST server, ONNX and int8 runtimes.

- `source`: which model (a registry URI or a bundle folder), downloaded, checked and loaded;
- `runtimes`: torch, ONNX fp32 and int8 behind one interface; `export`: the ONNX files made
  and checked at registration;
- `inputs`: bytes -> model input by ingest's decode rules; `results`: label, confidence, top-k;
- `batch`: `visionloop predict`; `app`, `batcher`, `follow`, `metrics`, `server`:
  `visionloop serve`; `reasons`: the reason codes of refused images and requests.
"""
