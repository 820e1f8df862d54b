package nftables

import "strconv"

func itoa[T ~int | ~int32](v T) string { return strconv.Itoa(int(v)) }
