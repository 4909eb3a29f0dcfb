"""The network and what runs it: TaSP, its backbone, keypoint selection, the fused and int8
CPU forwards, the matcher kernel and the released weights. Pure torch: no files, hloc or training."""
