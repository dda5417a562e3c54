"""What each page of the web dashboard shows, gathered for one viewer.

Every function takes a session, the viewer (`None` for an anonymous visitor) and plain
values, and reuses the services the JSON API uses, so the pages obey the same visibility rules:

- public: providers ranked by reputation, one provider's reputation history with reasons, and
  the ledger's hash-chain verification (without the platform's totals);
- a buyer sees its own jobs in full (included providers, funded / spent / escrow);
- a provider sees the jobs it has an offer for, only itself among their providers, and only
  its own money: its payouts page refuses anybody else but an admin (403);
- an admin sees everything;
- a job's final model is downloaded from its page by its buyer and admins only.

Nothing here renders HTML: pages get dataclasses and chart series (`market.ui.charts`), and
`market.ui.routes` renders them. Who may see what is decided by `market.services.access`.

- `common`: display names, job rows, the signed-in check;
- `jobs`: the marketplace and a job's page, the final model download;
- `providers`: a provider's reputation page;
- `money`: a provider's payouts page and the ledger page;
- `account`: the signed-in account's page.
"""

from market.ui.pages.account import AccountPage, account_page
from market.ui.pages.common import JobRow, Named, names_of, require
from market.ui.pages.jobs import (
    ContributionLine,
    JobPage,
    MarketplacePage,
    PrivacyLine,
    ProviderRank,
    RoundLine,
    final_model,
    job_page,
    marketplace,
    provider_ranking,
)
from market.ui.pages.money import (
    JOURNAL_LIMIT,
    JournalEntry,
    LedgerPage,
    PayoutsPage,
    ledger_page,
    payouts_page,
)
from market.ui.pages.providers import HISTORY_LIMIT, ProviderPage, provider_page, reputation_series

__all__ = [
    "HISTORY_LIMIT",
    "JOURNAL_LIMIT",
    "AccountPage",
    "ContributionLine",
    "JobPage",
    "JobRow",
    "JournalEntry",
    "LedgerPage",
    "MarketplacePage",
    "Named",
    "PayoutsPage",
    "PrivacyLine",
    "ProviderPage",
    "ProviderRank",
    "RoundLine",
    "account_page",
    "final_model",
    "job_page",
    "ledger_page",
    "marketplace",
    "names_of",
    "payouts_page",
    "provider_page",
    "provider_ranking",
    "reputation_series",
    "require",
]
