// SPDX-License-Identifier: GPL-2.0
/* Harness self-test: a module whose init triggers a kernel WARNING, which run-in-vm must catch. */
#include <linux/bug.h>
#include <linux/module.h>

static int __init warn_on_init(void)
{
	WARN(1, "unbd harness self-test: deliberate warning\n");
	return 0;
}

static void __exit warn_on_exit(void)
{
}

module_init(warn_on_init);
module_exit(warn_on_exit);
MODULE_DESCRIPTION("unbd VM harness self-test: WARN at load");
MODULE_LICENSE("GPL");
