DROP TABLE ok_table;
