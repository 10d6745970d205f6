// SPDX-License-Identifier: GPL-2.0
/*
 * unbd_ublk: ublk (userspace block device) driver for kernels built without
 * CONFIG_BLK_DEV_UBLK, compatible with the Linux 6.1 <linux/ublk_cmd.h> UAPI.
 */
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/path.h>

#include "unbd_ublk.h"

/* Any of these means another ublk driver already owns the UAPI. */
static const char * const unbd_foreign_ublk[] = {
	"/sys/class/misc/ublk-control",
	"/sys/class/ublk-char",
	"/sys/module/ublk_drv",
};

static const char *unbd_find_foreign_ublk(void)
{
	struct path path;
	int i;

	for (i = 0; i < ARRAY_SIZE(unbd_foreign_ublk); i++) {
		if (!kern_path(unbd_foreign_ublk[i], LOOKUP_FOLLOW, &path)) {
			path_put(&path);
			return unbd_foreign_ublk[i];
		}
	}
	return NULL;
}

static int __init unbd_init(void)
{
	const char *foreign = unbd_find_foreign_ublk();
	int ret;

	BUILD_BUG_ON(sizeof(struct unbd_cmd_pdu) >
		     sizeof_field(struct io_uring_cmd, pdu));
	BUILD_BUG_ON(UNBD_DESC_STRIDE % PAGE_SIZE);

	if (foreign) {
		pr_err(UNBD_NAME ": the running kernel already provides ublk (%s exists); not loading\n",
		       foreign);
		return -EEXIST;
	}
	ret = unbd_ctrl_init();
	if (ret)
		return ret;
	pr_info(UNBD_NAME ": loaded, features 0x%llx\n",
		(unsigned long long)UNBD_FEATURES);
	return 0;
}

static void __exit unbd_exit(void)
{
	unbd_ctrl_exit();
}

module_init(unbd_init);
module_exit(unbd_exit);

MODULE_DESCRIPTION("unbd ublk driver (userspace block devices over io_uring)");
MODULE_AUTHOR("The unbd authors");
MODULE_LICENSE("GPL");
