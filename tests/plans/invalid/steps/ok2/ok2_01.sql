CREATE TABLE ok2_table (id int);
