"""Volume backups (Cinder's ``/backups``): copies of a volume's data kept in a backup
store on another backend than the volume's, full or incremental."""
