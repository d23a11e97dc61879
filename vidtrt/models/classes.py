"""Class lists of the datasets the methods were trained on."""

# ImageNet VID's 30 classes in the devkit's order (class index = position + 1).
IMAGENET_VID_CLASSES = (
    "airplane", "antelope", "bear", "bicycle", "bird", "bus", "car", "cattle", "dog", "domestic_cat",
    "elephant", "fox", "giant_panda", "hamster", "horse", "lion", "lizard", "monkey", "motorcycle", "rabbit",
    "red_panda", "sheep", "snake", "squirrel", "tiger", "train", "turtle", "watercraft", "whale", "zebra",
)  # fmt: skip
