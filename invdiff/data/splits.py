"""Data splits: which images train the priors, which tune the solvers, which report results.

Fixed here, in one place, for the data the package generates or finds installed:

* **Phantoms** (:func:`invdiff.data.body_phantoms`): seeded. The ``phantom64`` training pool is
  drawn from seed :data:`PHANTOM_TRAIN_SEED`; the named problems' validation and test images
  from :data:`SPLIT_SEEDS` (streams that never meet the training pool's).
* **Photographs** that scikit-image ships: :data:`PHOTO_TRAIN` trains ``photo64`` and gives the
  validation crops; :data:`PHOTO_HELD_OUT` gives the test crops and is never trained on.
"""

from __future__ import annotations

__all__ = ["SPLIT_SEEDS", "PHANTOM_TRAIN_SEED", "PHOTO_TRAIN", "PHOTO_HELD_OUT", "PHOTO_TRAIN_STAGE1"]

#: seeds of the named problems' image splits
SPLIT_SEEDS = {"validation": 555, "test": 777}
#: seed of the phantom64 training pool
PHANTOM_TRAIN_SEED = 10000

#: scikit-image photographs used to train photo64 (and for validation crops)
PHOTO_TRAIN = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
               "camera", "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text")
#: scikit-image photographs held out from training (test crops)
PHOTO_HELD_OUT = ("chelsea", "rocket")
#: stage 1 of photo64 (see its model card)
PHOTO_TRAIN_STAGE1 = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                      "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text")
