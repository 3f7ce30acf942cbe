"""visprompt: prompt learning on a frozen CLIP under noisy labels (VisPrompt, arXiv 2604.09532)."""

__version__ = "0.1.0"
