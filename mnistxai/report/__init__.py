"""Presentation: figures as pure functions of arrays (``viz``), the HTML report (``html``) and the
demos' shared pieces (``demo``)."""
