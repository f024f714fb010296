"""The exchange log for auditors: tamper-evident record of every decision and delivery."""
