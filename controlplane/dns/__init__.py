"""DNS views: every name the cluster answers (``records``, ``record_index``,
``incremental_records``, ``vips``), what one tenant sees (``views``), views redone where
a change reaches (``view_builder``), and what a DnsPolicy's status says (``status``).

May import: ``core``, ``policy``. Pure.
"""
