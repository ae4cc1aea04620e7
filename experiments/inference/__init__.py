"""``detbench-predict``: run trained detectors on a user's own images and videos.

One idea per module:

* ``weights``: a run folder (or a checkpoint inside one) -> the rebuilt detector and its classes;
* ``sources``: an image, a folder, a glob or a video -> frames (PyAV decodes video);
* ``prefetch``: decoding in a background thread, so that it overlaps the network;
* ``truth``: the ground truth of images a COCO file annotates (the run's ground_truth.json by default);
* ``drawing``: boxes, labels and dashed ground truth on frames (PIL), side-by-side panels;
* ``outputs``: the annotated video (PyAV) and images, predictions.json records;
* ``predictor``: the loop, timed stage by stage with the speed protocol's synchronisation;
* ``cli``: the Hydra entry point (``conf/predict.yaml``).
"""
