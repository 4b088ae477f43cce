"""The platform's credit products and their data contracts: which fields of which datasets each may read.

The four products of Qinghai's platform (青政办〔2023〕24号) are purposes in the consent catalogue
(:data:`pps.governance.consent.PURPOSES`). A computation for a product may read only the fields its contract
names, whatever a consent would allow: the policy engine denies anything else with the reason
``outside_contract`` (purpose limitation and minimum necessity, PIPL Art. 6). Datasets are named as the
providers name them (the synthetic generator's table names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from pps.infra.storage.tables import Dataset


@dataclass(frozen=True)
class Product:
    purpose: str
    name_zh: str
    name_en: str
    contract: Mapping[str, frozenset[str]]
    """dataset name -> the fields the product may read"""


_REGISTRY = frozenset(
    {"industry", "region", "size_class", "registered_on", "registered_capital", "entity_type"}
)
_COURT = frozenset({"filed_on", "case_type", "role", "status"})

PRODUCTS: dict[str, Product] = {
    p.purpose: p
    for p in (
        Product(
            "tax_loan",
            "税易贷",
            "tax-record loan",
            {
                "registry": _REGISTRY,
                "tax": frozenset({"taxable_sales", "tax_paid"}),
                "social_insurance": frozenset({"headcount", "contributions"}),
                "utilities": frozenset({"arrears"}),
                "court": _COURT,
            },
        ),
        Product(
            "procurement_loan",
            "政采贷",
            "government-procurement loan",
            {
                "registry": _REGISTRY,
                "procurement": frozenset({"award_date", "amount"}),
                "tax": frozenset({"taxable_sales", "tax_paid"}),
                "court": _COURT,
            },
        ),
        Product(
            "farm_herding_loan",
            "农牧贷",
            "farm and herding loan",
            {
                "registry": _REGISTRY,
                "household_ratings": frozenset(
                    {
                        "grade",
                        "rated_on",
                        "livestock_units",
                        "land_mu",
                        "insured",
                        "insured_amount",
                        "subsidies_last_year",
                        "cooperative_member",
                        "family_farm",
                    }
                ),
                "household_production": frozenset({"livestock_sold", "sales_income", "yield_index"}),
                "utilities": frozenset({"arrears"}),
                "court": _COURT,
            },
        ),
        Product(
            "green_finance",
            "绿色金融",
            "green finance",
            {
                "registry": _REGISTRY,
                "utilities": frozenset({"electricity_kwh", "water_m3", "arrears"}),
                "tax": frozenset({"taxable_sales", "tax_paid"}),
                "procurement": frozenset({"award_date", "amount"}),
                "court": _COURT,
            },
        ),
    )
}


def outside_contract(session: Session, purpose: str, fields: Mapping[str, Sequence[str]]) -> str | None:
    """Why reading ``fields`` (dataset id -> names) breaks the product's contract, or None if it does not
    (or the purpose is not a product)."""
    product = PRODUCTS.get(purpose)
    if product is None:
        return None
    for dataset_id, names in fields.items():
        ds = session.get(Dataset, dataset_id)
        name = ds.name if ds is not None else dataset_id
        allowed = product.contract.get(name)
        if allowed is None:
            return f"{product.name_zh} ({purpose}) reads no field of dataset {name!r}"
        extra = sorted(set(names) - allowed)
        if extra:
            return f"{product.name_zh} ({purpose}) may not read {name}.{', '.join(extra)}"
    return None
