"""The budget enforcer: one owner per tenant decides every reservation against the tenant's budgets."""
