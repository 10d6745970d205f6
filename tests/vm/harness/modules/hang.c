// SPDX-License-Identifier: GPL-2.0
/*
 * Harness self-test: a module whose init sleeps uninterruptibly, so insmod sits in D state long
 * enough for the hung task detector (run with a short hung_task_timeout_secs) to report it.
 */
#include <linux/delay.h>
#include <linux/module.h>

static unsigned int hang_ms = 12000;
module_param(hang_ms, uint, 0444);
MODULE_PARM_DESC(hang_ms, "how long init sleeps in D state");

static int __init hang_init(void)
{
	msleep(hang_ms);
	return 0;
}

static void __exit hang_exit(void)
{
}

module_init(hang_init);
module_exit(hang_exit);
MODULE_DESCRIPTION("unbd VM harness self-test: hung task at load");
MODULE_LICENSE("GPL");
