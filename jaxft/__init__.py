"""jaxft: fine-tune pre-trained BERT-family language models in pure JAX/Flax."""

from jaxft import peft
from jaxft.errors import UserError
from jaxft.models import from_pretrained

__version__ = "0.1.0"
__all__ = ["UserError", "from_pretrained", "peft", "__version__"]
