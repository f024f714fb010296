"""Exchange log tables: exchanges, recipients, agencies, rule hits, deliveries, chain heads, checkpoints, auditor access.

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 02:25:48.983874

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('audit_access',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('os_user', sa.String(length=255), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('command', sa.String(length=32), nullable=False),
    sa.Column('args', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_access'))
    )
    op.create_table('audit_agency',
    sa.Column('exchange_id', sa.String(length=64), nullable=False),
    sa.Column('agency', sa.String(length=255), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('exchange_id', 'agency', name=op.f('pk_audit_agency'))
    )
    op.create_index('ix_audit_agency_agency_time', 'audit_agency', ['agency', 'time'], unique=False)
    op.create_table('audit_checkpoint',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('chain', sa.String(length=255), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('pruned', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoint')),
    sa.UniqueConstraint('chain', 'seq', 'kind', name=op.f('uq_audit_checkpoint_chain_seq_kind'))
    )
    op.create_table('audit_delivery',
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('exchange_id', sa.String(length=64), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reply', sa.Text(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('node', 'seq', name=op.f('pk_audit_delivery')),
    sa.UniqueConstraint('exchange_id', 'recipient', 'attempt', 'status', name=op.f('uq_audit_delivery_exchange_id_recipient_attempt_status'))
    )
    op.create_index('ix_audit_delivery_exchange', 'audit_delivery', ['exchange_id'], unique=False)
    op.create_table('audit_exchange',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=True),
    sa.Column('sender', sa.String(length=320), nullable=True),
    sa.Column('sender_agency', sa.String(length=255), nullable=True),
    sa.Column('sender_unit', sa.String(length=255), nullable=True),
    sa.Column('category', sa.String(length=40), nullable=True),
    sa.Column('doc_number', sa.String(length=255), nullable=True),
    sa.Column('doc_key', sa.String(length=255), nullable=True),
    sa.Column('decision', sa.String(length=16), nullable=True),
    sa.Column('rule', sa.String(length=128), nullable=True),
    sa.Column('message_id', sa.String(length=998), nullable=True),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_exchange')),
    sa.UniqueConstraint('node', 'seq', name=op.f('uq_audit_exchange_node_seq'))
    )
    op.create_index('ix_audit_exchange_category_time', 'audit_exchange', ['category', 'time'], unique=False)
    op.create_index('ix_audit_exchange_decision_time', 'audit_exchange', ['decision', 'time'], unique=False)
    op.create_index('ix_audit_exchange_doc_key', 'audit_exchange', ['doc_key'], unique=False)
    op.create_index('ix_audit_exchange_message_id', 'audit_exchange', ['message_id'], unique=False)
    op.create_index('ix_audit_exchange_sender_time', 'audit_exchange', ['sender', 'time'], unique=False)
    op.create_index('ix_audit_exchange_time', 'audit_exchange', ['time'], unique=False)
    op.create_table('audit_head',
    sa.Column('chain', sa.String(length=255), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_head'))
    )
    op.create_table('audit_recipient',
    sa.Column('exchange_id', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('agency', sa.String(length=255), nullable=True),
    sa.Column('unit', sa.String(length=255), nullable=True),
    sa.Column('official', sa.Boolean(), nullable=True),
    sa.Column('local', sa.Boolean(), nullable=True),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('exchange_id', 'address', name=op.f('pk_audit_recipient'))
    )
    op.create_index('ix_audit_recipient_address_time', 'audit_recipient', ['address', 'time'], unique=False)
    op.create_table('audit_rule_hit',
    sa.Column('exchange_id', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('exchange_id', 'rule', name=op.f('pk_audit_rule_hit'))
    )
    op.create_index('ix_audit_rule_hit_rule_time', 'audit_rule_hit', ['rule', 'time'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_audit_rule_hit_rule_time', table_name='audit_rule_hit')
    op.drop_table('audit_rule_hit')
    op.drop_index('ix_audit_recipient_address_time', table_name='audit_recipient')
    op.drop_table('audit_recipient')
    op.drop_table('audit_head')
    op.drop_index('ix_audit_exchange_time', table_name='audit_exchange')
    op.drop_index('ix_audit_exchange_sender_time', table_name='audit_exchange')
    op.drop_index('ix_audit_exchange_message_id', table_name='audit_exchange')
    op.drop_index('ix_audit_exchange_doc_key', table_name='audit_exchange')
    op.drop_index('ix_audit_exchange_decision_time', table_name='audit_exchange')
    op.drop_index('ix_audit_exchange_category_time', table_name='audit_exchange')
    op.drop_table('audit_exchange')
    op.drop_index('ix_audit_delivery_exchange', table_name='audit_delivery')
    op.drop_table('audit_delivery')
    op.drop_table('audit_checkpoint')
    op.drop_index('ix_audit_agency_agency_time', table_name='audit_agency')
    op.drop_table('audit_agency')
    op.drop_table('audit_access')
