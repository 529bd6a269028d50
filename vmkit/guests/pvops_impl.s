# pvops_impl.s: code and data behind the pvops macros. The native macros need none, so this
# file adds no byte; the paravirtual kernel gets pvops_pv_impl.s here instead.
