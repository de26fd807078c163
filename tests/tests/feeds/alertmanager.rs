//! A real Alertmanager (Debian's prometheus-alertmanager, with amtool) sends its webhook to intake.
