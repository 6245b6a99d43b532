"""Inside the network: its weights (`weights`), its hidden units (`activations`) and
the inputs they like best (`featureviz`)."""
