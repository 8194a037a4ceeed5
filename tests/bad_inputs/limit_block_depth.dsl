# expect: E0801 155:9
# user blocks nested 40 deep: the limit is 32
block B0() {
    input x: [B, 8]
    y = B1(x)
    output y
}
block B1() {
    input x: [B, 8]
    y = B2(x)
    output y
}
block B2() {
    input x: [B, 8]
    y = B3(x)
    output y
}
block B3() {
    input x: [B, 8]
    y = B4(x)
    output y
}
block B4() {
    input x: [B, 8]
    y = B5(x)
    output y
}
block B5() {
    input x: [B, 8]
    y = B6(x)
    output y
}
block B6() {
    input x: [B, 8]
    y = B7(x)
    output y
}
block B7() {
    input x: [B, 8]
    y = B8(x)
    output y
}
block B8() {
    input x: [B, 8]
    y = B9(x)
    output y
}
block B9() {
    input x: [B, 8]
    y = B10(x)
    output y
}
block B10() {
    input x: [B, 8]
    y = B11(x)
    output y
}
block B11() {
    input x: [B, 8]
    y = B12(x)
    output y
}
block B12() {
    input x: [B, 8]
    y = B13(x)
    output y
}
block B13() {
    input x: [B, 8]
    y = B14(x)
    output y
}
block B14() {
    input x: [B, 8]
    y = B15(x)
    output y
}
block B15() {
    input x: [B, 8]
    y = B16(x)
    output y
}
block B16() {
    input x: [B, 8]
    y = B17(x)
    output y
}
block B17() {
    input x: [B, 8]
    y = B18(x)
    output y
}
block B18() {
    input x: [B, 8]
    y = B19(x)
    output y
}
block B19() {
    input x: [B, 8]
    y = B20(x)
    output y
}
block B20() {
    input x: [B, 8]
    y = B21(x)
    output y
}
block B21() {
    input x: [B, 8]
    y = B22(x)
    output y
}
block B22() {
    input x: [B, 8]
    y = B23(x)
    output y
}
block B23() {
    input x: [B, 8]
    y = B24(x)
    output y
}
block B24() {
    input x: [B, 8]
    y = B25(x)
    output y
}
block B25() {
    input x: [B, 8]
    y = B26(x)
    output y
}
block B26() {
    input x: [B, 8]
    y = B27(x)
    output y
}
block B27() {
    input x: [B, 8]
    y = B28(x)
    output y
}
block B28() {
    input x: [B, 8]
    y = B29(x)
    output y
}
block B29() {
    input x: [B, 8]
    y = B30(x)
    output y
}
block B30() {
    input x: [B, 8]
    y = B31(x)
    output y
}
block B31() {
    input x: [B, 8]
    y = B32(x)
    output y
}
block B32() {
    input x: [B, 8]
    y = B33(x)
    output y
}
block B33() {
    input x: [B, 8]
    y = B34(x)
    output y
}
block B34() {
    input x: [B, 8]
    y = B35(x)
    output y
}
block B35() {
    input x: [B, 8]
    y = B36(x)
    output y
}
block B36() {
    input x: [B, 8]
    y = B37(x)
    output y
}
block B37() {
    input x: [B, 8]
    y = B38(x)
    output y
}
block B38() {
    input x: [B, 8]
    y = B39(x)
    output y
}
block B39() {
    input x: [B, 8]
    y = B40(x)
    output y
}
block B40() {
    input x: [B, 8]
    output x
}
model M {
    input x: [B, 8]
    y = B0(x)
    output y
}
