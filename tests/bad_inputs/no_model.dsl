# expect: E0208 1:1
# a file with no model
param a = 1
