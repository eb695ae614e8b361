"""What requests cost: model prices (overrides, then `genai-prices`) and token estimates.

Pure computation over bundled data: no network, no Redis, no HTTP. The sidecar charges
`PriceTable.cost` of the upstream's reported usage, and reserves the cost of
`estimate_request` before forwarding.
"""

from llmquota.pricing.config_file import PricingFileError, load_price_table
from llmquota.pricing.estimate import TokenEstimate, estimate_request
from llmquota.pricing.model_price import ModelPrice, UnknownModelError, UnknownModelPolicy
from llmquota.pricing.table import PriceTable

__all__ = [
    "ModelPrice",
    "PriceTable",
    "PricingFileError",
    "TokenEstimate",
    "UnknownModelError",
    "UnknownModelPolicy",
    "estimate_request",
    "load_price_table",
]
