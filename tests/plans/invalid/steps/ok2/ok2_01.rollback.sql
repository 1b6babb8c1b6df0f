DROP TABLE ok2_table;
