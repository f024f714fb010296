"""DMARC results of inbound mail counted per day and source, for aggregate reports (issue 22).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 11:50:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('dmarc_source',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('policy_domain', sa.String(length=255), nullable=False),
    sa.Column('header_from', sa.String(length=255), nullable=False),
    sa.Column('source_ip', sa.String(length=45), nullable=False),
    sa.Column('envelope_from', sa.String(length=255), nullable=False),
    sa.Column('disposition', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('dkim', sa.String(length=8), nullable=False),
    sa.Column('spf', sa.String(length=8), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('dkim_results', sa.Text(), nullable=False),
    sa.Column('spf_domain', sa.String(length=255), nullable=False),
    sa.Column('spf_scope', sa.String(length=8), nullable=False),
    sa.Column('spf_result', sa.String(length=16), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'key', name=op.f('pk_dmarc_source'))
    )
    op.create_index('ix_dmarc_source_header_from_day', 'dmarc_source', ['header_from', 'day'], unique=False)
    op.create_index('ix_dmarc_source_policy_domain_day', 'dmarc_source', ['policy_domain', 'day'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_dmarc_source_policy_domain_day', table_name='dmarc_source')
    op.drop_index('ix_dmarc_source_header_from_day', table_name='dmarc_source')
    op.drop_table('dmarc_source')
